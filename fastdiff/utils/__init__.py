"""Small shared helpers: distributed gathers, image grids / uint8 conversion, atomic writes, CPU threads."""
