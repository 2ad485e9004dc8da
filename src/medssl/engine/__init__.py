"""medssl.engine"""
