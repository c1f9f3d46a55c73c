from rmaat_app.cli import main

main()
