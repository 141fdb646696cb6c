"""A deterministic fake of SIMS 7 and SIMS Primary, served over real HTTP on loopback."""
