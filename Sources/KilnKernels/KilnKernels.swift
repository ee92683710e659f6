// KilnKernels
