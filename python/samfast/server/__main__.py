from .cli import main

if __name__ == "__main__":  # (not when a spawned front end imports this as its parent's main)
    main()
