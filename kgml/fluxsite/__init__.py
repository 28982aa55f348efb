"""Tools for one flux tower's record: flux features, MDS and ML/hybrid gap-filling, night-time and daytime
partitioning, u* threshold estimation and filtering (`kgml gapfill`, `kgml partition`)."""
