from rsir.cli import main

main()
