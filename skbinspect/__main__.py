from skbinspect.cli import main

main()
