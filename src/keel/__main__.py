from keel.surfaces.cli.main import run

run()
