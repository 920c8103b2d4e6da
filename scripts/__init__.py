"""Developer tooling (not shipped in the image)."""
