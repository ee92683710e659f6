// KilnCUDA
