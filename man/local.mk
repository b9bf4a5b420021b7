# man: targets added by the man work (see DESIGN).
