// KilnTokenizer
