"""The frozen bundle's entry point: one program, a plugin per basename(argv[0])."""

from multihome.lib.entry import main

main()
