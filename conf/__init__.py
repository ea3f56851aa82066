# Installed as the package `bertforge_conf` so Hydra finds the configs as `pkg://bertforge_conf`
# whether bertforge is installed editable or from a wheel.
