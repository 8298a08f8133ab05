"""The bundled demo: a small legacy app, a small new app, and the driver."""
