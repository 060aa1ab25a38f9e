"""mailwarden's command line: every admin operation as a NATS request, so one URL reaches everything."""
