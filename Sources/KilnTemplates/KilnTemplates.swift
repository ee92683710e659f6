// KilnTemplates
