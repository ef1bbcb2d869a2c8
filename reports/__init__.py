"""lrbench package."""
