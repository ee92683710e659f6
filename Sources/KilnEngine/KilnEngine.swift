// KilnEngine
