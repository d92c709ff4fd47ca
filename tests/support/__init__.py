"""What several test files share: the repo paths and fuzz scale (`env`), the reference model and its helpers
(`models`), and the MIPS program tools (`mips_asm`, `mips_build`, `mips_random`, `mips_programs/`)."""
