"""gpt5os.coordinator"""
