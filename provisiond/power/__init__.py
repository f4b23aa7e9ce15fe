"""Out-of-band power: drivers (IPMI, Wake-on-LAN, fake), the operation queue
and the worker that carries operations out, never inside an HTTP request."""
