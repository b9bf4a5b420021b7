# kernels/cuda: targets added by the kernels/cuda work (see DESIGN).
