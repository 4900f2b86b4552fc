"""Where models come from (local conversion and builds) and how processes are placed on CPU cores."""
