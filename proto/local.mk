# proto: targets added by the proto work (see DESIGN).
