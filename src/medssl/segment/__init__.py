"""medssl.segment"""
