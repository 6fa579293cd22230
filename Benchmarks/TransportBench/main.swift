print("transport bench")
