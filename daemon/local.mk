# daemon: targets added by the daemon work (see DESIGN).
