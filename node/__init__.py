"""gpt5os.node"""
