"""The on-disk index: one owner for the format, read and write side by side (versions and their
manifest, gallery arrays, token store, FAISS recall indexes, hash codes, SGPD clusters, metadata,
the alternative methods' extras, originals' sources, atomic writes)."""
