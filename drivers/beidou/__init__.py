"""BeiDou receivers (NMEA + RDSS short messages) and JT/T 808 vehicle terminals."""
