from rollouts.cli.main import main

main()
