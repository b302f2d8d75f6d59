"""Command-line tools: thin shells over `storage/` (compact, inspect, ship, merge, export), the
test and demo venue (`tools.venue`) and the demo (`demo_cli`, the one door into `logger`)."""
