"""Device drivers, one package per family (onvif, signal, beidou)."""
