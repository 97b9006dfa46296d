"""What every command shares: config, command line, errors, fault points, model references, text keys."""
