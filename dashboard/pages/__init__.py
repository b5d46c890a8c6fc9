"""One Dash page per module: its layout and its callbacks."""
