"""Backend-independent helpers: image decoding, mask encoding, caching."""
