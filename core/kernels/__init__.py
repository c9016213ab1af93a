"""Compiled decode kernels (matvec.c), built once per machine with the system C compiler.

Optional by design: without a compiler, or with TPI_CHAT_KERNELS=0, the engine runs torch's
own kernels and gives the same results up to float rounding.
"""
