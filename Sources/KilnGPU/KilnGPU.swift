// KilnGPU
