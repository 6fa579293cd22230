print("compute bench")
