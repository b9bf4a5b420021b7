# units: targets added by the units work (see DESIGN).
