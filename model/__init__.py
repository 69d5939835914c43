"""gpt5os.model"""
