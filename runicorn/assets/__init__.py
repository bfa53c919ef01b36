"""The seed's assets API: fingerprints, the blob store, restore and cleanup."""
