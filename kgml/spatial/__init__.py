"""Where no tower stands: gridded maps of the fluxes (dask, CF netCDF), attribution of their drivers and
scenarios of changed drivers, all through the models' public API (`kgml map`, `kgml explain`,
`kgml scenario`)."""
