"""The SNP firmware interface: a software model of the PSP (``sim``) and the real one (``snp``)."""
