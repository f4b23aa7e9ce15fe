"""The network side of PXE: DHCP, TFTP and the per-MAC boot entries."""
