"""DoseAlignment library: core (pure Python) and MRML logic."""
