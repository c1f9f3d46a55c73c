from astro_rmaat.cli import main

main()
