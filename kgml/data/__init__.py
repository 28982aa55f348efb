"""Readers turning raw third-party files into validated daily/hourly `xarray.Dataset`s with canonical names and units."""
