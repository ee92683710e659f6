// KilnCPU
