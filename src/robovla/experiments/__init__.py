"""Experiments that test the paper's claims on this machine, one command each (`robovla experiment NAME`)."""
