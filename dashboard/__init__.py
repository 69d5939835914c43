"""gpt5os.dashboard"""
