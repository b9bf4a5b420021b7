# client: targets added by the client work (see DESIGN).
