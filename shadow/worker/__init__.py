"""The shadow worker process: the proxy side that hands it requests (`bridge`), the process itself
(`process`) and the frames between them (`wire`).
"""
